"""Datasets: real data shipped inside installed packages by default, user folders/files by flag."""
