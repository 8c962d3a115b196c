# A GPU worker: CUDA torch, diffusers, transformers. Models download into $HF_HOME (a volume).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /app
COPY pyproject.toml README.md ./
COPY imagine ./imagine
COPY bot ./bot
COPY worker ./worker
COPY cli ./cli
RUN pip install --no-cache-dir ".[worker]"
CMD ["imagine", "worker", "--queues", "fast,relax"]
