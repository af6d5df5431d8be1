-- Runs once, when the postgres volume is first initialised: the basic-auth app keeps users and
-- permissions in their own database, beside the tracking store's (POSTGRES_DB).
CREATE DATABASE mlflow_auth;
