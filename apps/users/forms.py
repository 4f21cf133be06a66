"""Forms of the account pages: password reset (Django's views, our limits) and the second factor."""

import hashlib
import logging

from django import forms
from django.conf import settings
from django.contrib.auth.forms import PasswordResetForm

from apps.core.ratelimit import rate_limit_hit
from apps.core.versioned import CACHE_ERRORS

logger = logging.getLogger(__name__)


class LimitedPasswordResetForm(PasswordResetForm):
    """Django's reset form, sending at most ``PASSWORD_RESET_EMAILS_PER_HOUR`` emails to one address an hour.

    Anyone can ask for a reset of any address; without a bound a stranger could flood a user's mailbox. Over the
    bound nothing is sent but the page answers as always ("if an account has that address, a link is on its
    way"), so the form never tells whether an address belongs to an account. A Redis error lets the email go:
    a missed bound costs one email, a refused reset locks a person out.
    """

    email = forms.EmailField(
        label="Email address", max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )

    def get_users(self, email):
        identity = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
        try:
            decision = rate_limit_hit(
                scope="password-reset",
                identity=identity,
                limit=settings.PASSWORD_RESET_EMAILS_PER_HOUR,
                window_seconds=3600,
            )
        except CACHE_ERRORS:
            logger.warning("Could not count a password reset email; sending it", exc_info=True)
        else:
            if not decision.allowed:
                logger.info("Password reset emails to one address over the hourly bound; not sending")
                return iter(())
        return super().get_users(email)


class TokenForm(forms.Form):
    """The six digits of an authenticator app (spaces, as apps show them, are allowed)."""

    otp_token = forms.CharField(
        label="Code from your authenticator app",
        max_length=16,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True, "pattern": "[0-9 ]*"}
        ),
    )

    def clean_otp_token(self):
        token = self.cleaned_data["otp_token"].replace(" ", "")
        if not (token.isascii() and token.isdigit() and len(token) == 6):
            raise forms.ValidationError("Enter the 6 digits your authenticator app shows.")
        return token
