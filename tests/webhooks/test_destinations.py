"""Where webhooks may go: public addresses, or the networks an operator allows (CHATTER_WEBHOOK_ALLOWED_NETWORKS).
A budget's webhook to anything else is refused when it is saved; every delivery resolves the name itself, checks
each address and connects to the checked one, so a name that resolves (or is rebound) to an internal address is
refused then too: the delivery fails at once, without retries. Redirects are never followed. An attempt takes
TIMEOUT_S in all, however slowly a receiver answers, and reads no more of its answer than it keeps. (Runs' and crons'
webhooks of /langgraph/: tests/agent_server/test_webhooks_and_delays.py.)"""
import socket
import ssl
import threading
from datetime import datetime, timedelta, timezone

import pytest
from django.db import transaction
from django_q.models import Schedule

from budgets.models import Budget
from tests.webhook_receiver import (  # noqa: F401 - fixtures
    NON_PUBLIC_URLS, RECEIVER_NETWORKS, SECRET, fake_dns, receiver)
from webhooks import tasks
from webhooks.models import WebhookDelivery
from webhooks.services import webhook_delivery_create

PUBLIC = "93.184.215.14"  # a public address (nothing here can reach it)


@pytest.fixture
def signing(settings):
    settings.CHATTER_WEBHOOK_SECRET = SECRET
    settings.CHATTER_WEBHOOK_RETRY_S = 30


def budget_with_webhook(api, url):
    return api.post("/api/v1/budgets/", {"scope": "user", "period": "day", "limit_tokens": 100, "mode": "soft",
                                         "thresholds": [1], "webhook_url": url}, format="json")


def chat(api):
    response = api.post("/api/v1/chat/", {"message": "hello", "max_tokens": 40}, format="json")
    assert response.status_code == 201, response.content


def deliver(url: str) -> WebhookDelivery:
    """A delivery through the one delivery path; the test settings run its task inline once this commits."""
    with transaction.atomic():
        delivery = webhook_delivery_create(subject_type="budget", subject_id="1", url=url, event="budget_threshold",
                                           payload={"threshold": 1})
    delivery.refresh_from_db()
    return delivery


def assert_refused(delivery: WebhookDelivery, reason: str) -> None:
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 1, None)
    assert delivery.last_error.startswith("refused: ") and reason in delivery.last_error, delivery.last_error
    assert not Schedule.objects.filter(func="webhooks.tasks.webhook_deliver").exists()  # never retried


@pytest.mark.django_db
@pytest.mark.parametrize("url", NON_PUBLIC_URLS)
def test_it_refuses_a_budget_webhook_to_a_non_public_destination(api, signing, url):
    response = budget_with_webhook(api, url)

    assert response.status_code == 400, response.content
    (detail,) = response.json()["error"]["details"]
    assert detail["path"] == "webhook_url" and detail["code"] == "forbidden_destination", detail
    assert not Budget.objects.exists()


@pytest.mark.django_db
def test_it_refuses_a_budget_webhook_whose_name_resolves_to_a_private_address(api, signing, fake_dns):
    fake_dns.answer("hooks.example.com", [PUBLIC, "10.1.2.3"])  # one internal address is enough

    response = budget_with_webhook(api, "https://hooks.example.com/hook")

    assert response.status_code == 400
    (detail,) = response.json()["error"]["details"]
    assert detail["path"] == "webhook_url" and "10.1.2.3, a private address" in detail["message"]
    assert not Budget.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_allowed_networks_let_an_internal_receiver_through(api, signing, settings, receiver):
    hook = receiver()
    assert budget_with_webhook(api, hook.url).status_code == 400  # 127.0.0.1: not public, not allowed yet
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS

    assert budget_with_webhook(api, hook.url).status_code == 201
    chat(api)

    (payload,) = hook.verified()
    assert payload["threshold"] == 1
    assert WebhookDelivery.objects.get().status == "delivered"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("answer", "reason"), [
    (["127.0.0.1"], "127.0.0.1, a loopback address"),
    (["10.0.0.5"], "10.0.0.5, a private address"),
    (["169.254.169.254"], "169.254.169.254, a link-local address"),
    (["::ffff:192.168.0.1"], "a private address"),
    ([PUBLIC, "100.64.0.7"], "100.64.0.7, a non-public address"),
])
def test_it_refuses_delivery_to_a_name_that_resolves_to_a_non_public_address(signing, fake_dns, receiver, answer,
                                                                             reason):
    hook = receiver()
    fake_dns.answer("hooks.example.com", answer)

    delivery = deliver(f"http://hooks.example.com:{hook.port}/hook")

    assert_refused(delivery, reason)
    assert hook.received == []


@pytest.mark.django_db(transaction=True)
def test_it_refuses_delivery_to_localhost(signing, receiver):
    """No fake here: /etc/hosts says what localhost is."""
    hook = receiver()

    delivery = deliver(f"http://localhost:{hook.port}/hook")

    assert_refused(delivery, "localhost resolves to 127.0.0.1, a loopback address")
    assert hook.received == []


@pytest.mark.django_db(transaction=True)
def test_it_refuses_delivery_to_a_url_with_credentials_even_to_an_allowed_network(signing, settings, receiver):
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS
    hook = receiver()

    delivery = deliver(f"http://user:pw@127.0.0.1:{hook.port}/hook")

    assert_refused(delivery, "credentials in the URL")
    assert hook.received == []


@pytest.mark.django_db(transaction=True)
def test_it_refuses_delivery_when_the_name_was_rebound_to_loopback_after_it_was_saved(api, signing, fake_dns,
                                                                                      receiver):
    hook = receiver()
    fake_dns.answer("rebind.example.com", [PUBLIC], ["127.0.0.1"])  # public when saved, loopback from then on
    assert budget_with_webhook(api, f"http://rebind.example.com:{hook.port}/hook").status_code == 201

    chat(api)  # crosses the budget's 1% threshold: its alert is delivered (inline, in the test settings)

    assert_refused(WebhookDelivery.objects.get(), "rebind.example.com resolves to 127.0.0.1, a loopback address")
    assert hook.received == []
    assert fake_dns.lookups == ["rebind.example.com", "rebind.example.com"]  # when saved, when delivered


@pytest.mark.django_db(transaction=True)
def test_a_delivery_connects_to_the_address_it_checked_with_the_urls_name_as_host(signing, settings, fake_dns,
                                                                                  receiver):
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS
    checked = receiver()
    elsewhere = receiver(host="127.0.0.2", port=checked.port)  # where a second lookup would lead
    fake_dns.answer("hooks.example.com", ["127.0.0.1"], ["127.0.0.2"])

    delivery = deliver(f"http://hooks.example.com:{checked.port}/hook")

    assert delivery.status == "delivered", delivery.last_error
    ((headers, _),) = checked.received
    assert headers["host"] == f"hooks.example.com:{checked.port}"
    assert elsewhere.received == [] and fake_dns.lookups == ["hooks.example.com"]


@pytest.mark.django_db(transaction=True)
def test_an_https_delivery_sends_the_urls_name_as_sni_and_checks_the_certificate_against_it(
        signing, settings, fake_dns, tls_server):
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS
    fake_dns.answer("hooks.example.com", ["127.0.0.1"])

    delivery = deliver(f"https://hooks.example.com:{tls_server.port}/hook")

    assert tls_server.server_names == ["hooks.example.com"]  # the name, to the checked address
    # Its certificate is self-signed: verified (and refused), not skipped; retried like any failed connection.
    assert delivery.status == "retrying" and "CERTIFICATE_VERIFY_FAILED" in delivery.last_error, delivery.last_error


@pytest.mark.django_db(transaction=True)
def test_a_redirect_is_not_followed(signing, settings, receiver):
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS
    target = receiver()
    hook = receiver(statuses=[(302, {"Location": target.url})])

    delivery = deliver(hook.url)

    assert (delivery.status, delivery.last_status_code) == ("retrying", 302)
    assert len(hook.received) == 1 and target.received == []


@pytest.mark.django_db(transaction=True)
def test_an_attempt_is_bounded_in_all_and_a_receiver_slower_than_that_is_retried(signing, settings, receiver,
                                                                                  monkeypatch):
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS
    monkeypatch.setattr(tasks, "TIMEOUT_S", 1)  # (10 s as shipped)
    # Each line well within a read's timeout, 5 s in all: a receiver that would hold an attempt as long as it likes.
    hook = receiver(drip_s=0.2, drip_lines=25)

    delivery = deliver(hook.url)

    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("retrying", 1, None)
    assert delivery.last_error == "TimeoutError: no answer within 1 s"
    assert Schedule.objects.filter(func="webhooks.tasks.webhook_deliver").count() == 1  # retried as any failure


@pytest.mark.django_db(transaction=True)
def test_an_attempt_reads_the_start_of_a_huge_answer_and_hangs_up(signing, settings, receiver):
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS
    size = 64 * 1024 * 1024
    hook = receiver(statuses=[500], body_size=size)

    delivery = deliver(hook.url)

    assert (delivery.status, delivery.last_status_code) == ("retrying", 500)
    assert delivery.last_error == "HTTP 500: " + "x" * 200  # what the log keeps
    assert hook.answered.wait(30)
    (sent,) = hook.sent
    assert sent < size  # the rest was never read: the attempt hung up


class TLSServer:
    """A TLS server on 127.0.0.1 with a self-signed certificate for hooks.example.com that keeps the name each
    client asks for (SNI)."""

    def __init__(self, tmp_path):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.example.com")])
        now = datetime.now(timezone.utc)
        certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                       .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                       .not_valid_after(now + timedelta(days=1))
                       .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.example.com")]), False)
                       .sign(key, hashes.SHA256()))
        (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
        self.context.sni_callback = lambda _socket, server_name, _context: self.server_names.append(server_name)
        self.server_names = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(connection, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass  # the client refuses the certificate


@pytest.fixture
def tls_server(tmp_path):
    server = TLSServer(tmp_path)
    yield server
    server.listener.close()
