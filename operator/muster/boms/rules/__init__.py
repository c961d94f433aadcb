"""The AI-BOM decided purely: CycloneDX 1.6 from facts the gates checked."""
