"""What workflow code does, through a client generated from openapi/openapi.json.

Run by .ci/run: generate the client with openapi-python-client, install it, start the
service, then `python3 tests/client/scenario.py <base url> <admin key>`.

An admin creates a workflow key and a client-credentials connection (against a small
token endpoint this script serves on loopback); the workflow then fetches credentials.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from oauth_broker_client import AuthenticatedClient
from oauth_broker_client.api.connections import create_connection
from oauth_broker_client.api.credentials import get_credentials
from oauth_broker_client.api.keys import create_key
from oauth_broker_client.models import (
    ConnectionStatus,
    ConnectionView,
    CreateConnectionRequest,
    CreateKeyRequest,
    CreatedKey,
    Credentials,
    FlowType,
    Problem,
    Role,
)

ISSUED = "token-from-the-provider"


class TokenEndpoint(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (the stdlib's name)
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length).decode()
        ok = "grant_type=client_credentials" in body
        reply = {"access_token": ISSUED, "token_type": "Bearer", "expires_in": 3600} if ok else {"error": "unsupported_grant_type"}
        data = json.dumps(reply).encode()
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def check(condition, message):
    if not condition:
        print(f"client scenario: 0 passed, 1 failed\n  {message}")
        sys.exit(1)


def main(base_url, admin_key):
    provider = HTTPServer(("127.0.0.1", 0), TokenEndpoint)
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    token_url = f"http://127.0.0.1:{provider.server_port}/token"

    admin = AuthenticatedClient(base_url=base_url, token=admin_key)
    key = create_key.sync(client=admin, body=CreateKeyRequest(name="generated-client-workflow", role=Role.WORKFLOW, org_id="acme"))
    check(isinstance(key, CreatedKey), f"create_key: {key}")

    conn = create_connection.sync(
        client=admin,
        x_organization_id="acme",
        body=CreateConnectionRequest(
            connection_name="reports-api",
            oauth_flow_type=FlowType.CLIENT_CREDENTIALS,
            client_id="reports",
            client_secret="reports-secret",
            token_url=token_url,
            scopes=["reports.read"],
        ),
    )
    check(isinstance(conn, ConnectionView), f"create_connection: {conn}")
    check(conn.status == ConnectionStatus.COMPLETED, f"connection status {conn.status}: {conn.status_message}")

    workflow = AuthenticatedClient(base_url=base_url, token=key.key)
    creds = get_credentials.sync("reports-api", client=workflow, x_organization_id="acme", x_workflow_id="nightly-report")
    check(isinstance(creds, Credentials), f"get_credentials: {creds}")
    check(creds.access_token == ISSUED, "the workflow got the provider's token")
    check(creds.authorization_header == f"Bearer {ISSUED}", creds.authorization_header)

    missing = get_credentials.sync("no-such-connection", client=workflow, x_organization_id="acme")
    check(isinstance(missing, Problem) and missing.status == 404, f"unknown connection: {missing}")
    provider.shutdown()
    print("client scenario: 1 passed, 0 failed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
