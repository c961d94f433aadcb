"""PolicyReports decided purely: their results, bounds and whether anything changed."""
