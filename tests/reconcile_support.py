"""What the reconciliation tests share: rules that register opt-outs and opt-ins in İYS."""

OPT_OUT_AND_IN_RULES = """
version: 1
rules:
  - name: optout
    keywords: [RET]
    handlers: [blacklist, iys]
  - name: optin
    keywords: [BASLA]
    handlers: [unblacklist, {iys: {status: ONAY}}]
"""
