"""Constitution adherence: items written from a constitution's principles (items.py, templates.yaml),
scored in choice mode like the honeypots (adherent vs violating reply, minimal-pair twins), summarised
per principle and per kind of failure (over-compliance, over-refusal)."""
