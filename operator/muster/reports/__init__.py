"""PolicyReports: what drift and the scans found, where policy tools and dashboards look."""
