"""A synthetic subscription business and its signed Stripe webhook stream, for demos, tests and benchmarks.

`business.generate_business(...)` draws customers, cards, renewals, declines and recoveries;
`stream.build_events(business)` renders them as current-API Stripe webhook events;
`stream.sign(...)` signs a body like Stripe does; `demo.run_demo(...)` drives a real server with them.
"""
