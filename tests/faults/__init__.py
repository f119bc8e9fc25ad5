"""Fault trials (issue 11): each file breaks one thing on purpose and asserts what a client sees afterwards.

- the broker goes away during a deploy; a POST while it is down: test_broker_outage.py
- make run's web server, worker or Redis is killed: test_make_run_survives_crashes.py
- Lynx restarts under a deploy in flight: test_resume_after_restart.py (a Failed deployment retried as it
  is: tests/deployments/test_update.py)
- a client keeps a connection across a restart (TIME_WAIT); the port taken: test_port_survives_restart.py
- a cluster is deleted while a deployment to it is created: test_cluster_delete_race.py
- init() exits the process: test_init_exits.py
- run() leaks past the deployment's memory: test_memory_limit.py
- a replica is killed; a worker's pool child is killed mid-step: test_reconcile_latency.py
"""
