# Lumen image (blueprint section 42): the code and its dependencies; state lives in /data.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lumen lumen
COPY rmb rmb
COPY exporters exporters
COPY safety safety
COPY ure ure
COPY api api
RUN pip install --no-cache-dir . && useradd --uid 10001 --create-home lumen
COPY schemas schemas
COPY configs configs
COPY tools tools
COPY scripts scripts
COPY Makefile ./
RUN mkdir -p /data && chown lumen /data
USER lumen
WORKDIR /data
EXPOSE 9409 9410 8088
CMD ["python", "-u", "/app/exporters/rmb_exporter_v17.py", "--config", "/app/configs/rmb_v17.yaml"]
