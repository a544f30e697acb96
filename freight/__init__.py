"""Freight: run GPU jobs in containers over REST."""
