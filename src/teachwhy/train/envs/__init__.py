"""The built-in RL environments as data: harmlessness.yaml (prompts) and rubric.yaml (the offline
reward rubric). Loaded by teachwhy.train.environments and teachwhy.train.rewards."""
