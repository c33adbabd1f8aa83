from django.urls import path

from workflows.consumers import ExecutionEventsConsumer, UserEventsConsumer

websocket_urlpatterns = [
    path("ws/executions/<str:execution_id>/", ExecutionEventsConsumer.as_asgi()),
    path("ws/events/", UserEventsConsumer.as_asgi()),
]
