"""Prompt templates of the RL rewards as data (reward_judge.txt: the LLM judge rubric)."""
