from rest_framework.routers import SimpleRouter

from apps.alerts.api.views import AlertRuleViewSet, AlertViewSet

# No trailing slash, like every route of the versioned API (config/api_router.py).
router = SimpleRouter(trailing_slash=False)
router.register("alerts", AlertViewSet, basename="alert")
router.register("alert-rules", AlertRuleViewSet, basename="alert-rule")

urlpatterns = router.urls
