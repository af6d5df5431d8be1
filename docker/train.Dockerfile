# Training image: CUDA runtime + the CUDA build of torch + medres. Build from the repository root:
#   docker build -f docker/train.Dockerfile -t medres-train .
#   docker run --gpus all -v /data/cxr:/data/cxr:ro -v $PWD/runs:/work -e MLFLOW_TRACKING_URI=http://tracking:5000 \
#       medres-train fit --config /opt/medres/configs/chest_xray.yaml --data.root /data/cxr
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PIP_NO_CACHE_DIR=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3-pip git \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from the CUDA 12.8 wheel index, so medres's dependencies never pick another build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128

WORKDIR /opt/medres
COPY pyproject.toml README.md ./
COPY medres ./medres
COPY configs ./configs
COPY pipelines ./pipelines
RUN pip install .

# Runs, checkpoints and the default SQLite store land in /work (mount it).
WORKDIR /work
ENTRYPOINT ["medres"]
CMD ["--help"]
