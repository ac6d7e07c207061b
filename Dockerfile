# Lumen image (blueprint section 42): Lumen installed from its wheel, as any package is
# (not editable): the default configs, the schemas and the live page ship inside it, found
# through importlib.resources. The processes are its console scripts (pyproject.toml
# [project.scripts], lumen/cli.py): lumen-rmb-emitter, lumen-rmb-exporter, lumen-ure-loop,
# lumen-api, ... (or `python -m rmb.rmb_emitter`). State lives in /data, the working
# directory (logs/, data/, run/). tests/test_wheel.py checks the same install path.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lumen lumen
COPY configs configs
COPY schemas schemas
COPY tools tools
COPY rmb rmb
COPY exporters exporters
COPY safety safety
COPY ure ure
COPY api api
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --uid 10001 --create-home lumen && mkdir -p /data && chown lumen /data
USER lumen
WORKDIR /data
EXPOSE 9409 9410 8088
CMD ["lumen-rmb-exporter"]
