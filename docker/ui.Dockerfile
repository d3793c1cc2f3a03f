# syntax=docker/dockerfile:1
# The UI image: Dash only, no torch. It talks to the API over HTTP and never loads a model.
#
# Build from the repository root (compose.yaml does this):
#   docker build -f docker/ui.Dockerfile -t outlier-lab-ui .

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# Assumption: the UI (app/ui and the CLI path to `outlier-lab ui`) imports nothing beyond
# these four and the standard library, and leaves torch/TransformerLens to the API. The project
# itself goes in with --no-deps so its torch requirement is not pulled; keep these ranges in
# step with the UI's dependencies in pyproject.toml.
RUN python -m venv /opt/venv \
    && pip install "dash>=4.4,<5" "plotly>=5.20,<8" "httpx>=0.27,<1" "pydantic>=2.7,<3"
COPY . /app
# Editable, so /app keeps the checkout's layout and Dash finds assets/ beside the code.
# `ui --help` fails the build if the UI command path imports something not installed here.
RUN pip install --no-deps --editable /app \
    && outlier-lab ui --help > /dev/null

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 outlier \
    && useradd --system --uid 10001 --gid outlier --create-home --home-dir /home/outlier --shell /usr/sbin/nologin outlier
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /app
EXPOSE 8050
ENTRYPOINT ["outlier-lab"]
CMD ["ui", "--host", "0.0.0.0", "--port", "8050", "--api-url", "http://api:8000"]
