# Scoring image: CPU torch + medres, for batch scoring of an archive with a registered model.
#   docker build -f docker/score.Dockerfile -t medres-score .
#   docker run -v /archive:/archive:ro -v $PWD/out:/out -e MLFLOW_TRACKING_URI=http://tracking:5000 \
#       medres-score score --model models:/chest_xray@champion --input /archive --output /out/preds.parquet
# For GPU scoring use the training image with the same command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PIP_NO_CACHE_DIR=1

RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/medres
COPY pyproject.toml README.md ./
COPY medres ./medres
COPY configs ./configs
RUN pip install .

# Non-root at run time: the scorer only reads the archive and writes /out.
RUN useradd --create-home --uid 10001 medres
USER medres
WORKDIR /out
ENTRYPOINT ["medres"]
CMD ["--help"]
