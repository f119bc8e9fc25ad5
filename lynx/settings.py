"""Lynx settings: everything comes from the environment, with embedded defaults for a laptop.

Development (the default): SQLite in var/, an embedded Redis server on a unix socket in var/
(started by `make run`), a generated secret key kept in var/. Production (LYNX_ENV=production):
SECRET_KEY, LYNX_ENCRYPTION_KEY, DATABASE_URL, REDIS_URL and ALLOWED_HOSTS must be set, the two
secrets long and not a placeholder, or Lynx refuses to start and says which one is wrong; cookies are
then Secure, HTTPS is enforced (redirect and HSTS).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from workers.queues import local_queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("LYNX_VAR_DIR", BASE_DIR / "var")).resolve()

# var/ holds the database (and so every session), the secret keys and the replicas' key files: nothing
# any process of Lynx writes is for other local users to read, whatever the shell's umask.
os.umask(0o077)
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _make_private(var_dir: Path) -> None:
    """Tighten what an older checkout (or a looser umask) left readable: var/ itself and its top level.
    The 0700 directory alone already keeps others out of everything below it."""
    for path in (var_dir, *var_dir.iterdir()):
        try:
            info = path.lstat()
            if info.st_uid != os.getuid():
                continue
            if stat.S_ISDIR(info.st_mode):
                path.chmod(0o700)
            elif stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
                path.chmod(stat.S_IMODE(info.st_mode) & 0o700)
        except FileNotFoundError:  # a replica's or a test's file, gone since iterdir listed it
            continue


_make_private(VAR_DIR)

LYNX_ENV = os.environ.get("LYNX_ENV", "development")
PRODUCTION = LYNX_ENV == "production"


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ImproperlyConfigured(f"LYNX_ENV=production needs {name} to be set (see .env.example).")
    return value


_PLACEHOLDER = re.compile(r"change.?(me|it)|^django-insecure|placeholder|example", re.I)


def _production_secret(name: str) -> str:
    """A secret that is set, long, and not a placeholder; the message never repeats the value."""
    value = _required(name)
    problem = ""
    if _PLACEHOLDER.search(value):
        problem = "it looks like a placeholder, such as the one in .env.example"
    elif len(value) < 50 or len(set(value)) < 10:
        # 50: what `manage.py check --deploy` asks of SECRET_KEY.
        problem = "it is too short or too repetitive to be a random secret (50 characters at least)"
    if problem:
        raise ImproperlyConfigured(
            f"LYNX_ENV=production refuses {name}: {problem}. Set it to a long random value, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'."
        )
    return value


def _dev_secret(filename: str) -> str:
    """A random secret generated once per checkout and kept in var/, so restarts keep sessions and keys."""
    path = VAR_DIR / filename
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


if PRODUCTION:
    SECRET_KEY = _production_secret("SECRET_KEY")
    LYNX_ENCRYPTION_KEY = _production_secret("LYNX_ENCRYPTION_KEY")
    _required("DATABASE_URL")
    _required("REDIS_URL")
    # localhost: the container's own healthcheck, which asks gunicorn directly.
    ALLOWED_HOSTS = [*_required("ALLOWED_HOSTS").split(","), "localhost"]
    DEBUG = False
    # HTTPS only: a session cookie sent over plain HTTP is an admin session anyone on the path can replay.
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = os.environ.get("LYNX_SSL_REDIRECT", "1") == "1"
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # the healthcheck asks over HTTP on loopback
    SECURE_HSTS_SECONDS = int(os.environ.get("LYNX_HSTS_SECONDS", "31536000"))
else:
    SECRET_KEY = os.environ.get("SECRET_KEY") or _dev_secret("secret_key")
    LYNX_ENCRYPTION_KEY = os.environ.get("LYNX_ENCRYPTION_KEY") or _dev_secret("encryption_key")
    ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")
    DEBUG = os.environ.get("DEBUG", "0") == "1"

CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]
# Behind a reverse proxy that terminates TLS, Django sees plain HTTP from the proxy. X-Forwarded-Proto and
# X-Forwarded-For are headers any client can send, so they are believed only when the operator says a proxy
# in front of every request overwrites them (docker-compose.yml's nginx does).
LYNX_TRUST_PROXY_HEADERS = os.environ.get("LYNX_TRUST_PROXY_HEADERS", "0") == "1"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if LYNX_TRUST_PROXY_HEADERS else None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "dashboard",
    "deployments",
    "scoring",
    "api",
    # django-ninja, the API's plumbing; listed so its Swagger UI is served from its own static files (no CDN).
    "ninja",
    "axes",
]

# Deployment targets: a cluster's `backend` value → its package (targets/<name>/: a backend, and pages if it
# has any). Adding a target is its package and one line here.
LYNX_TARGETS = {
    "local": "targets.local",
    # Azure ML: managed online endpoints (SDK v2) first, the default for a new Azure deployment;
    # Kubernetes online endpoints (v2) on an AKS cluster a team keeps; AKS web services (SDK v1) for what
    # teams already run.
    "azureml_managed": "targets.azureml.managed",
    "azureml_k8s": "targets.azureml.kubernetes",
    "azureml": "targets.azureml",
}
# Each target's Django app is its top package (targets.azureml holds both Azure targets).
INSTALLED_APPS += list(dict.fromkeys(".".join(p.split(".")[:2]) for p in LYNX_TARGETS.values()))

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "api.middleware.audit_via_middleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "dashboard.middleware.method_not_allowed_page",  # after auth and messages: it renders the layout
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: it turns a lockout into the login page
]

ROOT_URLCONF = "lynx.urls"
WSGI_APPLICATION = "lynx.wsgi.application"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

# --- Login throttling (django-axes) ------------------------------------------------------------------
# Failures are counted per username and address together: a guesser is stopped, and nobody can lock a
# colleague out from elsewhere. The lockout names no account state; `manage.py axes_reset_username` lifts one.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("LYNX_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("LYNX_LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "dashboard.views.login.client_ip"
AXES_LOCKOUT_CALLABLE = "dashboard.views.login.lockout"
AXES_ENABLE_ADMIN = False  # the admin is read-only; attempts are in the database and the log

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.roles",
            ],
        },
    },
]

# --- Database: PostgreSQL from DATABASE_URL, else SQLite in var/ ---------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'lynx.sqlite3'}",
        conn_max_age=60,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Web, worker and beat share one SQLite file: wait for locks instead of failing at once,
    # and take the write lock at BEGIN so two writers never deadlock on an upgrade.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so a real Celery worker process can see what a test wrote.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis / Celery: REDIS_URL, else the embedded redis-server's socket in var/ ------------------
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
REDIS_URL = os.environ.get("REDIS_URL") or f"unix://{EMBEDDED_REDIS_SOCKET}"
CELERY_BROKER_URL = REDIS_URL.replace("unix://", "redis+socket://", 1)

# The API's rate counters live in Redis, so every web process counts the same token's requests together.
# The default cache stays in each process's memory (nothing else in Lynx caches).
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "api": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "lynx",
    },
}
# Requests per token (or per signed-in person) and period: s, m, h or d.
LYNX_API_RATE = os.environ.get("LYNX_API_RATE", "600/m")
CELERY_RESULT_BACKEND = None  # task history lives in the database (Operation), not in the broker
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300  # the longest step (an Azure model upload) stays well under this
CELERY_TASK_SOFT_TIME_LIMIT = 240
# Longer than the longest task, so Redis never re-delivers a task that is still running.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ALWAYS_EAGER = False

# --- Lynx ------------------------------------------------------------------------------------------
LYNX_MODELS_DIR = VAR_DIR / "models"
LYNX_LOCAL_DIR = VAR_DIR / "local"  # one state dir per local deployment (replicas, logs, keys)
# Where a local deployment's front proxy (the key-checking one; replicas stay on Unix sockets) listens, and
# the host name its scoring URI gives. The web process POSTs test images to that URI: in compose it runs in
# another container, so the worker binds 0.0.0.0 and names itself by its service name (docker-compose.yml).
LYNX_LOCAL_BIND_HOST = os.environ.get("LYNX_LOCAL_BIND_HOST") or "127.0.0.1"
LYNX_LOCAL_PUBLIC_HOST = os.environ.get("LYNX_LOCAL_PUBLIC_HOST") or (
    "127.0.0.1" if LYNX_LOCAL_BIND_HOST in ("0.0.0.0", "::") else LYNX_LOCAL_BIND_HOST
)
# The Celery queue of the one host that runs local replicas: every task touching them goes there
# (workers/celery.py, operation_dispatch). lynx/process_args.py reads the same variable.
LYNX_LOCAL_QUEUE = local_queue()
LYNX_UPLOADS_DIR = VAR_DIR / "uploads"
# Django's temporary upload files live under var/ too, so a request killed mid-upload leaves them where the
# hourly sweep (deployments.services.registered_models.uploads_sweep) finds them, not in the system's /tmp.
FILE_UPLOAD_TEMP_DIR = str(VAR_DIR / "upload-tmp")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
# What the sweep counts as left behind: anything an upload wrote that is older than this.
LYNX_UPLOAD_STALE_HOURS = float(os.environ.get("LYNX_UPLOAD_STALE_HOURS", "6"))
# An operation step holds a lease this long, renewed every quarter lease while it runs (a heartbeat); a step
# whose lease ran out was lost (worker killed) and the reconciler hands it to another worker within seconds.
LYNX_OPERATION_LEASE_SECONDS = float(os.environ.get("LYNX_OPERATION_LEASE_SECONDS", "8"))
LYNX_POLL_SECONDS = float(os.environ.get("LYNX_POLL_SECONDS", "1"))
LYNX_RECONCILE_SECONDS = float(os.environ.get("LYNX_RECONCILE_SECONDS", "10"))  # Azure services
LYNX_RECONCILE_LOCAL_SECONDS = float(os.environ.get("LYNX_RECONCILE_LOCAL_SECONDS", "2"))  # local, lost steps
LYNX_DEPLOY_TIMEOUT_SECONDS = int(os.environ.get("LYNX_DEPLOY_TIMEOUT_SECONDS", "900"))
# How long Lynx follows a provisioning or a deployment is the target's own allowance (TargetTraits:
# provision_timeout_s, deploy_timeout_s; LYNX_DEPLOY_TIMEOUT_SECONDS where a target sets none) times this.
# 1 in use; tests run Azure's pace scaled down (as the emulator's clock does) with a smaller factor.
LYNX_TIMEOUT_SCALE = float(os.environ.get("LYNX_TIMEOUT_SCALE", "1"))
# Model archives are streamed to disk, never held in memory; this caps their size.
LYNX_MODEL_UPLOAD_MAX_BYTES = int(os.environ.get("LYNX_MODEL_UPLOAD_MAX_MB", "1024")) * 2**20
LYNX_TEST_SCORING_TIMEOUT_SECONDS = float(os.environ.get("LYNX_TEST_SCORING_TIMEOUT_SECONDS", "30"))

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "dashboard" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

LYNX_EXPIRY_CHECK_SECONDS = float(os.environ.get("LYNX_EXPIRY_CHECK_SECONDS", "60"))
LYNX_EXPIRY_WARN_MINUTES = float(os.environ.get("LYNX_EXPIRY_WARN_MINUTES", "60"))

# Expiry warnings are emailed when an SMTP host is configured; otherwise they go to the console.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "587"))
EMAIL_USE_TLS = os.environ.get("EMAIL_USE_TLS", "1") == "1"
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "lynx@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"quiet_housekeeping": {"()": "lynx.log_filters.QuietHousekeeping"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["quiet_housekeeping"]}
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"azureml": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}
