"""Development helpers shared by tests/, bench/ and tools/: the service and what it talks to, run
for real on loopback.

- `waiting`: HANG, the bound only a hang reaches, and `wait_for`;
- `ports`: a free loopback port;
- `paths`: the repository root;
- `service_process`: `gunicorn -c gunicorn.conf.py app:app` as a process (GunicornProcess);
- `redis_server`: a private redis-server, and clean-up of a shared one's keys by prefix;
- `electricitymaps_stand_in`: an Electricity Maps stand-in speaking its wire format under /v4 and /v3.

Never part of the service (the image does not hold it): `carbon_optimizer` never imports it, and it
imports neither tests, bench nor tools (.importlinter checks both).
"""
