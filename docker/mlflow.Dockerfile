# Team tracking server: MLflow with the basic-auth app, PostgreSQL store, artifacts proxied to a volume.
# Built by docker/compose.yaml (service mlflow); the version matches the MLflow medres is tested with.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PIP_NO_CACHE_DIR=1

# mlflow[auth] brings Flask-WTF for the basic-auth app; psycopg2 talks to PostgreSQL. No boto3: artifacts live
# on a volume this server proxies, not in an object store clients would need their own credentials for.
RUN pip install "mlflow[auth]==3.17.2" "psycopg2-binary==2.9.10"

COPY docker/mlflow_server.py /opt/mlflow_server.py
RUN useradd --create-home --uid 10002 mlflow && mkdir /mlartifacts && chown mlflow /mlartifacts
USER mlflow
EXPOSE 5000
ENTRYPOINT ["python", "/opt/mlflow_server.py"]
