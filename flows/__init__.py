"""Prefect flows: composition of the stage tasks into the SOLAR DAG."""
