# The Discord bot: slim, no torch.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY imagine ./imagine
COPY bot ./bot
COPY worker ./worker
COPY cli ./cli
RUN pip install --no-cache-dir ".[bot]"
USER nobody
CMD ["imagine", "bot"]
