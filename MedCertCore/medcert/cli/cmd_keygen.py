"""`medcert keygen`: create an Ed25519 signing key pair (private key mode 0600, never overwritten)."""

from __future__ import annotations

import argparse
import os

from medcert.audit import add_audit_db_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keygen", help="create an Ed25519 signing key pair",
                       description="Write signing-key.pem (private, mode 0600) and signing-key.pub.pem "
                                   "(give this one to auditors) into DIR. "
                                   "Existing keys are never overwritten.")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the key files (created if absent)")
    p.add_argument("--passphrase-env", metavar="VAR",
                   help="encrypt the private key with the passphrase held in environment variable VAR")
    add_audit_db_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcert.audited import create_signing_key
    from medcert.errors import KeyFileError

    passphrase = None
    if args.passphrase_env:
        value = os.environ.get(args.passphrase_env)
        if not value:
            raise KeyFileError(f"environment variable {args.passphrase_env} (--passphrase-env) "
                               "is unset or empty")
        passphrase = value.encode("utf-8")
    priv, pub, kid = create_signing_key(args.out, passphrase, audit_db=args.audit_db)
    print(f"private key: {priv} (mode 0600{', encrypted' if passphrase else ''}; keep it secret)")
    print(f"public key:  {pub}")
    print(f"key id:      {kid}")
    return 0
