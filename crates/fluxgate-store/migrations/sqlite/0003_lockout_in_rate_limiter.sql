-- Failed logins are counted by the rate limiter now (memory or Redis), not in the database.
DROP TABLE login_throttle;
