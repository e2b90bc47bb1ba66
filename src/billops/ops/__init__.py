"""Operating the durable workflows: list, show and resume them (workflows.py), the CLI group (cli.py),
the API routes (routes.py), and the watcher that alerts when one fails (watch.py)."""
