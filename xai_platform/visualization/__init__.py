"""Explanation -> figures."""
