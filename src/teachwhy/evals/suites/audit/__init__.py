"""The audit suite: multi-turn conversations from seed instructions (seeds/, seeds.py), played by a
scripted auditor as an Inspect task (task.py) and scored per dimension (dimensions.yaml, scoring.py)."""
