from django.urls import path

from agent_server.consumers import ThreadEventsConsumer

websocket_urlpatterns = [
    path("langgraph/threads/<str:thread_id>/stream/events", ThreadEventsConsumer.as_asgi()),
]
