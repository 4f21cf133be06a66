"""How the users app reacts to django.contrib.auth: connected in ``UsersConfig.ready()``.

A failed login counts towards locking the username and the client address (``apps.users.throttling``), whichever
login form or ``authenticate`` call it came from.
"""

from django.contrib.auth.signals import user_login_failed

from apps.users.throttling import count_login_failure

user_login_failed.connect(count_login_failure, dispatch_uid="login-throttle-count")
