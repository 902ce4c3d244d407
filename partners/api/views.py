"""The settlement API: a partner's server reads its statements and usage. Authentication is an
access token from the client credentials grant of one of the partner's apps, with the
settlement:read scope; everything is scoped to that app's partner, so another partner's ids
answer 404 exactly like ids that do not exist."""

from typing import Any

from django.http import HttpResponse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import ApiError
from partners.api import serializers
from partners.api.authentication import PartnerOAuth2Authentication
from partners.api.permissions import PartnerClientToken, token_partner
from partners.models import Application
from partners.portal import selectors

ERROR_RESPONSES = {
    400: OpenApiResponse(description="invalid_request: the query is not valid"),
    401: OpenApiResponse(description="not_authenticated: no or an invalid access token"),
    403: OpenApiResponse(
        description="client_credentials_required, app_not_live or insufficient_scope"
    ),
}


class CsvRenderer(BaseRenderer):
    """Lets clients ask for text/csv (the view answers the CSV itself)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> bytes:
        if isinstance(data, str | bytes):
            return data.encode("utf-8") if isinstance(data, str) else data
        return JSONRenderer().render(data)


class SettlementApiView(APIView):
    authentication_classes = [PartnerOAuth2Authentication]
    permission_classes = [PartnerClientToken]

    def not_found(self) -> ApiError:
        return ApiError(
            code="not_found", message=_("Not found."), status_code=status.HTTP_404_NOT_FOUND
        )

    def query(self, serializer_class: type) -> dict[str, Any]:
        serializer = serializer_class(data=self.request.query_params)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


class StatementPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class StatementListView(SettlementApiView):
    @extend_schema(
        operation_id="settlement_statements_list",
        summary="List your statements",
        parameters=[serializers.StatementListQuerySerializer],
        responses={200: serializers.StatementPageSerializer, **ERROR_RESPONSES},
    )
    def get(self, request: Request) -> Response:
        query = self.query(serializers.StatementListQuerySerializer)
        statements = selectors.partner_statements(
            partner=token_partner(request),
            period_kind=query.get("period"),
            status=query.get("status"),
        )
        paginator = StatementPagination()
        page = paginator.paginate_queryset(statements, request, view=self)
        data = serializers.StatementSerializer(page, many=True).data
        return paginator.get_paginated_response(data)


class StatementDetailView(SettlementApiView):
    @extend_schema(
        operation_id="settlement_statements_retrieve",
        summary="One statement with its lines",
        responses={
            200: serializers.StatementDetailSerializer,
            404: OpenApiResponse(description="not_found"),
            **ERROR_RESPONSES,
        },
    )
    def get(self, request: Request, statement_id: int) -> Response:
        partner = token_partner(request)
        statement = selectors.partner_statement_get(partner=partner, statement_id=statement_id)
        if statement is None:
            raise self.not_found()
        data = dict(serializers.StatementSerializer(statement).data)
        data["lines"] = serializers.StatementLineSerializer(
            selectors.statement_lines(partner=partner, statement=statement), many=True
        ).data
        return Response(data)


class StatementCsvView(SettlementApiView):
    renderer_classes = [JSONRenderer, CsvRenderer]

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are JSON in our shape, even for a client that asked for text/csv.
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response

    @extend_schema(
        operation_id="settlement_statements_csv",
        summary="One statement's lines as CSV",
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            404: OpenApiResponse(description="not_found"),
            **ERROR_RESPONSES,
        },
    )
    def get(self, request: Request, statement_id: int) -> HttpResponse:
        partner = token_partner(request)
        statement = selectors.partner_statement_get(partner=partner, statement_id=statement_id)
        if statement is None:
            raise self.not_found()
        response = HttpResponse(
            selectors.statement_csv(partner=partner, statement=statement),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = (
            f'attachment; filename="statement-{statement.pk}-{statement.period_label}.csv"'
        )
        return response


class UsageView(SettlementApiView):
    @extend_schema(
        operation_id="settlement_usage",
        summary="Usage of your apps and models, aggregated",
        description=(
            "Charges made by your apps and charges for your models, summed by any of day, "
            "app and model over an inclusive range of UTC days. Another partner's app using "
            "your model is counted with app null."
        ),
        parameters=[serializers.UsageQuerySerializer],
        responses={
            200: serializers.UsageResponseSerializer,
            404: OpenApiResponse(description="not_found: no such app of yours"),
            **ERROR_RESPONSES,
        },
    )
    def get(self, request: Request) -> Response:
        query = self.query(serializers.UsageQuerySerializer)
        partner = token_partner(request)
        app = query.get("app")
        if app and not Application.objects.filter(partner=partner, client_id=app).exists():
            raise self.not_found()
        rows = selectors.partner_usage(
            partner=partner,
            date_from=query["start"],
            date_to=query["end"],
            group_by=query["group_by"],
            app_client_id=app,
        )
        return Response(
            {
                "start": query["start"].isoformat(),
                "end": query["end"].isoformat(),
                "group_by": query["group_by"],
                "rows": serializers.UsageRowSerializer(rows, many=True).data,
            }
        )
