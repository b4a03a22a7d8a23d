"""The sdc agent: sweeps, analyses and reports on cron schedules (APScheduler), with missed
runs coalesced, busy nodes deferred and a clean stop on SIGTERM."""
