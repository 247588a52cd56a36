"""Hand-written Standard state machines the cost model runs next to durable (tests/aws_costs.py)."""
