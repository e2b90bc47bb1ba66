"""Executors that reach people and other systems: email (SMTP), SMS (Twilio REST), Slack incoming
webhooks, and outbound webhooks signed per the Standard Webhooks spec. Each sender is a plain
function that raises `DeliveryError` (retryable or permanent); the durable retry and the idempotency
per workflow step live in the workflow's delivery step (recovery/delivery.py)."""
