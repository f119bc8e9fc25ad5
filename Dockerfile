FROM python:3.11-slim
# bubblewrap: the sandbox every local replica runs in (scoring/sandbox.py); production refuses local deploys
# without it, or without libseccomp2 (the replicas' seccomp filter; apt needs it too, so it is there already).
# The worker container gets the privileges bwrap needs (docker-compose.yml says which, and why).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap libseccomp2 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
# The running set only, hashed: the test and lint tools are in requirements-dev.lock, not here.
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY . .
RUN pip install --no-cache-dir --no-deps -e . && LYNX_VAR_DIR=/tmp/static python manage.py collectstatic --noinput
# Lynx runs as its own user; its state volume (LYNX_VAR_DIR) starts out owned by it and private (0700).
# Only compose's worker overrides this (user "0:0"), so that replicas can drop to uid 65534 in the sandbox.
RUN useradd --system --uid 10001 --home-dir /var/lib/lynx lynx \
    && install -d -o lynx -g lynx -m 0700 /var/lib/lynx
USER lynx
EXPOSE 8000
