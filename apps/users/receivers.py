"""How the users app reacts to django.contrib.auth: connected in ``UsersConfig.ready()``.

A failed login counts towards throttling its (username, address) pair and its address, whichever login form or
``authenticate`` call it came from; a successful one clears its pair (``apps.users.throttling``) and, when a second
factor is due, leaves the session pending until the code is entered (``apps.users.two_factor``).
"""

from django.contrib.auth.signals import user_logged_in, user_login_failed

from apps.users.throttling import count_login_failure, forget_login_failures
from apps.users.two_factor import note_login

user_login_failed.connect(count_login_failure, dispatch_uid="login-throttle-count")
user_logged_in.connect(forget_login_failures, dispatch_uid="login-throttle-forget")
user_logged_in.connect(note_login, dispatch_uid="two-factor-pending")
