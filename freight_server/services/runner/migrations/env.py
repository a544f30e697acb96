from freight_server.services.runner.schema import metadata
from freight_server.shared.db import run_migrations_online

run_migrations_online(metadata)
