from django.http import HttpRequest

from accounts.roles import can_deploy, is_admin, role_of


def roles(request: HttpRequest) -> dict:
    user = request.user
    return {"can_deploy": can_deploy(user), "is_admin": is_admin(user), "role": role_of(user)}
