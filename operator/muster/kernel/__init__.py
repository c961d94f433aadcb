"""The vocabulary every area shares, decided purely: findings, subjects, references, reviews."""
