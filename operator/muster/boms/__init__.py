"""The AI-BOM: a CycloneDX document of what each workload runs, kept beside it."""
