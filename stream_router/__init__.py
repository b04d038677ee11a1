"""stream_router: a human-in-the-loop router for real-time ML predictions.

Predictions arrive on Kafka; confident ones pass straight through, the rest go to human
review through Amazon Augmented AI (A2I); reviewed results come back out on Kafka.
"""

__version__ = "0.1.0"
