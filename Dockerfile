FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
RUN pip install --no-cache-dir --no-deps -e . && LYNX_VAR_DIR=/tmp/static python manage.py collectstatic --noinput
EXPOSE 8000
