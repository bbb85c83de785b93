"""Experiments: arms x budgets x seeds as ordinary runs, their analysis and report."""
