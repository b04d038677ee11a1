"""The ingest role: every prediction record read from Kafka ends as exactly one of an accepted
envelope, a review request, a dead letter or a counted tombstone skip.

``loop`` owns the cycle on aiokafka (consume a batch, decide, produce, then commit); ``parser``
turns a record into a :class:`~stream_router.models.Prediction` or a poison event; ``dispatch``
gives every record its one disposition (no I/O); ``writer`` batches what is produced per
partition; ``undecodable`` steps over record batches the Kafka client cannot decode. Nothing is
imported here: importing this package does not load aiokafka.
"""
