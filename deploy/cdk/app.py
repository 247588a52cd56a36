"""A CDK (Python) app that deploys the durable stack: infra/template.yaml, included as is.

CDK users get the same stack `durable deploy` creates, as a construct they can
extend (add alarms, grant other stacks access, pass parameters):

    cd deploy/cdk && pip install -r requirements.txt
    durable synth --module flows.py --out build     # build/bundle.zip
    aws s3 cp build/bundle.zip s3://my-artifacts/durable/bundle.zip
    cdk deploy -c code_bucket=my-artifacts -c code_key=durable/bundle.zip

Context (``-c key=value``): ``stack_name`` (default ``durable``), ``code_bucket``
and ``code_key`` (where the bundle of ``durable synth`` was uploaded), ``template``
(default: the repository's ``infra/template.yaml``).
Synthesizing needs no AWS account and no CDK CLI (``python app.py`` writes ``cdk.out``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import cloudformation_include as cfn_inc

HERE = Path(__file__).resolve().parent
DEFAULT_TEMPLATE = HERE.parent.parent / "infra" / "template.yaml"


class DurableStack(cdk.Stack):
    """The generic durable stack; ``self.template`` gives access to every included resource."""

    def __init__(
        self,
        scope: cdk.App,
        construct_id: str,
        *,
        template_file: Path,
        code_bucket: str,
        code_key: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.template = cfn_inc.CfnInclude(
            self,
            "Durable",
            template_file=str(template_file),
            parameters={"CodeBucket": code_bucket, "CodeKey": code_key},
        )


def build(app: cdk.App) -> DurableStack:
    context = app.node.try_get_context
    return DurableStack(
        app,
        context("stack_name") or "durable",
        template_file=Path(context("template") or DEFAULT_TEMPLATE),
        code_bucket=context("code_bucket") or "durable-code-bucket",
        code_key=context("code_key") or "durable/bundle.zip",
    )


def main() -> None:
    app = cdk.App()  # writes to $CDK_OUTDIR, or ./cdk.out
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
