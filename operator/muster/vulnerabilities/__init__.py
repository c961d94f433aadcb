"""The vulnerability gate: trivy scans stored as ImageScans, judged at admission."""
