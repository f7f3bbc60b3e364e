-- Runs once, when the PostgreSQL volume is first initialised: the Prefect server's database
-- is POSTGRES_DB (prefect); MLflow's tracking store gets its own.
CREATE DATABASE mlflow;
