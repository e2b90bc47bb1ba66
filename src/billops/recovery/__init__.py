"""Payment recovery: features, scoring, retry planning under network rules, decisions, the workflow."""
