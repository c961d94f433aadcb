"""The vulnerability gate decided purely: trivy reports, thresholds, the scan relay's answers."""
