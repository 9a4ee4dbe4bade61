"""Dependency aliases for routes."""

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from gateway.context import GatewayContext


def get_context(connection: HTTPConnection) -> GatewayContext:
    context: GatewayContext = connection.app.state.context
    return context


Ctx = Annotated[GatewayContext, Depends(get_context)]
