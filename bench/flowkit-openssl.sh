#!/usr/bin/env bash
# The anchor for bench/quickstart.py: makes FlowKit's secrets the way FlowKit's quickstart
# script does (openssl rand for passwords, a Python one-liner per Fernet key, openssl genrsa for
# the JWT key and openssl req -x509 -newkey rsa:4096 for the TLS pair), into the directory $1.
set -euo pipefail
out=$1
mkdir -p "$out"
cd "$out"
pw() { openssl rand -base64 16 | tr -dc 'a-zA-Z0-9' > "$1"; }
for name in FLOWAUTH_DB_PASSWORD FLOWAUTH_ADMIN_PASSWORD FLOWAUTH_REDIS_PASSWORD \
            FLOWMACHINE_FLOWDB_PASSWORD REDIS_PASSWORD FLOWAPI_FLOWDB_PASSWORD \
            FLOWDB_POSTGRES_PASSWORD FLOWETL_POSTGRES_PASSWORD FLOWETL_CELERY_PASSWORD \
            FLOWETL_REDIS_PASSWORD; do
  pw "$name"
done
openssl rand -base64 64 > SECRET_KEY
printf admin > FLOWAUTH_ADMIN_USERNAME
printf flowmachine > FLOWMACHINE_FLOWDB_USER
printf flowapi > FLOWAPI_FLOWDB_USER
printf flowapi_server > FLOWAPI_IDENTIFIER
printf flowetl > FLOWETL_POSTGRES_USER
printf flowetl > FLOWETL_CELERY_USER
python3 -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())" > FLOWAUTH_FERNET_KEY
python3 -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())" > AIRFLOW__CORE__FERNET_KEY
openssl genrsa -out PRIVATE_JWT_SIGNING_KEY 4096 2>/dev/null
openssl rsa -in PRIVATE_JWT_SIGNING_KEY -pubout -out PUBLIC_JWT_SIGNING_KEY 2>/dev/null
openssl req -x509 -newkey rsa:4096 -keyout key-flowkit.pem -out cert-flowkit.pem -days 3650 \
  -nodes -subj "/CN=flow.api" -addext "subjectAltName=DNS:localhost,DNS:flow.api" 2>/dev/null
