"""deploy/aws/carbon-optimizer.yaml agrees with the code, and builds in moto's CloudFormation.

(a) The names the template hands the container (secret keys, environment variables, port, health
    path) are read from the code here, the way tests/test_deployment_docs.py finds the variables:
    by parsing the sources, not by a second hand-written list.
(b) The stack is created in moto (in-process, mock_aws). moto 5.2 has no CloudFormation support for
    ElastiCache, Application Auto Scaling, CloudWatch alarms or AWS::EC2::SecurityGroupEgress: it
    skips those resources (the test asserts exactly that set is skipped), so they are checked by
    cfn-lint in `make lint-deploy` and by the structural assertions below, not by moto. moto also
    lacks the LoadBalancerFullName and TargetGroupFullName attributes; the test rewrites those two
    GetAtts into the ARN suffixes AWS documents them to be, and checks the dashboard got them.
"""
import ast
import json
import re
import warnings
from pathlib import Path

import boto3
import pytest
from cfnlint.decode import cfn_yaml
from moto import mock_aws

from carbon_optimizer.secret_store import EnvSecretStore, parse_secret
from carbon_optimizer.settings import Settings, load_settings
from tests.test_deployment_docs import code_env_vars

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "deploy" / "aws" / "carbon-optimizer.yaml"
REGION = "eu-west-1"
# moto warns once per resource it skips; the fixture records those warnings and the test compares them.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS")


@pytest.fixture(scope="module")
def template():
    # cfn-lint's loader understands the short forms (!Ref, !Sub, ...) and returns the long ones.
    return json.loads(json.dumps(cfn_yaml.loads(TEMPLATE_PATH.read_text())))


@pytest.fixture(scope="module")
def container(template):
    (definition,) = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    return definition


# -- what the code reads, found in its sources ------------------------------------------------------

def _tree(relative: str) -> ast.Module:
    return ast.parse((ROOT / relative).read_text())


# Optional provider credentials: the template injects what every deployment has; a WattTime user
# adds these two (DEPLOYMENT.md, "The secret for the template").
OPTIONAL_PROVIDER_SECRETS = {"WATTTIME_USERNAME", "WATTTIME_PASSWORD"}


def env_backend_names() -> set[str]:
    """Names EnvSecretStore reads with environ.get(...) in secret_store/env.py, but the optional
    provider credentials."""
    names = set()
    for node in ast.walk(_tree("carbon_optimizer/secret_store/env.py")):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "environ":
            names.add(node.args[0].value)
    return names - OPTIONAL_PROVIDER_SECRETS


def secret_json_keys() -> set[str]:
    """Keys parse_secret reads from the secret's JSON (data.get("k"), data["k"]) in secret_store/base.py."""
    (func,) = [n for n in ast.walk(_tree("carbon_optimizer/secret_store/base.py"))
               if isinstance(n, ast.FunctionDef) and n.name == "parse_secret"]
    keys = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "data":
            keys.add(node.slice.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "data":
            keys.add(node.args[0].value)
    return keys - {name.lower() for name in OPTIONAL_PROVIDER_SECRETS}


def gunicorn_default_port() -> int:
    """The port of gunicorn.conf.py's default bind: os.environ.get("GUNICORN_BIND", "host:port")."""
    for node in ast.walk(_tree("gunicorn.conf.py")):
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["bind"]:
            return int(node.value.args[1].value.rsplit(":", 1)[1])
    raise AssertionError("no bind = ... in gunicorn.conf.py")


def test_code_readers_find_something():
    # Guards the AST walks above: an empty set would make every comparison below vacuous.
    assert {"API_KEYS", "ELECTRICITY_MAPS_API_KEY"} <= env_backend_names()
    assert {"api_keys", "electricity_maps_api_key"} <= secret_json_keys()
    assert gunicorn_default_port() > 0


# -- (a) the template against the code -----------------------------------------------------------

def _secret_entries(container) -> dict[str, str]:
    """Variable name -> JSON key of the secret, from ValueFrom "${SecretArn}:<key>::"."""
    entries = {}
    for entry in container["Secrets"]:
        value_from = entry["ValueFrom"]["Fn::Sub"]
        prefix, key, stage, version = value_from.split(":")
        assert prefix == "${SecretArn}" and stage == "" and version == "", value_from
        entries[entry["Name"]] = key
    return entries


def test_secret_names_are_what_the_env_backend_reads(container):
    assert set(_secret_entries(container)) == env_backend_names()


def test_secret_keys_are_what_parse_secret_reads(container):
    # One secret layout for every backend: the ECS-injected keys are the keys of SECRET_SHAPE.
    assert set(_secret_entries(container).values()) == secret_json_keys()


def test_injected_secret_reads_the_same_as_the_aws_backend(container):
    # What ECS does with the template's Secrets: each JSON key's string value into its variable.
    # The env backend must then see exactly what the aws backend makes of the same secret.
    secret = {"electricity_maps_api_key": "em-key", "api_keys": "client-one, client-two",
              "metrics_token": "scrape-token"}
    injected = {name: secret[key] for name, key in _secret_entries(container).items()}
    assert EnvSecretStore(injected).current() == parse_secret(secret)
    assert EnvSecretStore(injected).current().api_keys == ("client-one", "client-two")


def test_environment_names_are_read_by_the_code(container):
    names = {entry["Name"] for entry in container["Environment"]}
    assert names <= code_env_vars(), f"not read by the code: {sorted(names - code_env_vars())}"
    assert not names & env_backend_names(), "a secret must come from Secrets, not Environment"


def test_environment_is_a_valid_configuration(template, container):
    # The template's environment with its parameters' defaults (or an example value) loads.
    examples = {"AlbSubnetCidrs": "10.0.0.0/24,10.0.1.0/24", "ExistingRedisUrl": "rediss://r.example:6379/0"}
    parameters = template["Parameters"]

    def resolve(value):
        if isinstance(value, str):
            return value
        if "Ref" in value:
            return examples.get(value["Ref"], str(parameters[value["Ref"]].get("Default")))
        if "Fn::If" in value:
            return resolve(value["Fn::If"][2])  # the existing-Redis branch; the other is a GetAtt
        raise AssertionError(f"unexpected value {value}")

    environ = {entry["Name"]: resolve(entry["Value"]) for entry in container["Environment"]}
    settings = load_settings(environ)
    assert settings.trusted_proxy_count == 1 and settings.secrets_backend == "env"
    allowed_providers = set(Settings.model_fields["carbon_provider"].annotation.__args__)
    assert set(parameters["CarbonProvider"]["AllowedValues"]) <= allowed_providers


def test_port_is_the_one_gunicorn_binds(template, container):
    port = gunicorn_default_port()
    env = {entry["Name"]: entry["Value"] for entry in container["Environment"]}
    assert env["GUNICORN_BIND"].rsplit(":", 1)[1] == str(port)
    assert [m["ContainerPort"] for m in container["PortMappings"]] == [port]
    target_group = template["Resources"]["TargetGroup"]["Properties"]
    assert target_group["Port"] == port
    assert template["Resources"]["Service"]["Properties"]["LoadBalancers"][0]["ContainerPort"] == port
    assert f"127.0.0.1:{port}/" in " ".join(container["HealthCheck"]["Command"])


def test_health_path_is_the_service_route(template, container, app):
    def path_of(endpoint):
        (rule,) = [r for r in app.url_map.iter_rules() if r.endpoint.rsplit(".", 1)[-1] == endpoint]
        return rule.rule
    # The ALB checks readiness (503 while a worker's threads are exhausted: traffic goes elsewhere)
    health_path = path_of("health")
    assert app.test_client().get(health_path).status_code == 200  # the matcher the ALB uses
    assert template["Resources"]["TargetGroup"]["Properties"]["HealthCheckPath"] == health_path
    assert template["Resources"]["TargetGroup"]["Properties"]["Matcher"] == {"HttpCode": "200"}
    # ... ECS's container check is liveness (a failing task is replaced): never the readiness path.
    live_path = path_of("health_live")
    assert app.test_client().get(live_path).status_code == 200
    assert f":{gunicorn_default_port()}{live_path}'" in container["HealthCheck"]["Command"][-1]


def test_container_hardening(container):
    assert container["User"] == "10001:10001"  # the image's user (Dockerfile: useradd --uid 10001)
    assert container["ReadonlyRootFilesystem"] is True
    assert container["LinuxParameters"]["Capabilities"] == {"Drop": ["ALL"]}


def test_tmp_is_a_task_volume_fargate_accepts(template):
    task = template["Resources"]["TaskDefinition"]["Properties"]
    # ECS rejects LinuxParameters.Tmpfs for the Fargate launch type (the API's ContainerDefinition
    # reference: "not supported for tasks run on AWS Fargate"), so the stack would not deploy.
    if "FARGATE" in task["RequiresCompatibilities"]:
        for definition in task["ContainerDefinitions"]:
            assert "Tmpfs" not in definition.get("LinuxParameters", {}), definition["Name"]
    # With a read-only root, /tmp must be a writable mount of a volume the task declares.
    volumes = {v["Name"]: v for v in task["Volumes"]}
    (container,) = task["ContainerDefinitions"]
    (tmp,) = [m for m in container["MountPoints"] if m["ContainerPath"] == "/tmp"]
    assert tmp["ReadOnly"] is False
    # No Host (nor EFS/Docker config): a Fargate bind volume on the task's ephemeral storage.
    assert volumes[tmp["SourceVolume"]] == {"Name": tmp["SourceVolume"]}
    # A fresh bind volume is root-owned 0755; ECS copies the image's mode only for a path the
    # image declares as VOLUME, which is what lets UID 10001 write there.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^VOLUME \["/tmp"\]$', dockerfile, re.MULTILINE)


def test_metrics_refusal_is_the_service_404(template, app):
    # The ALB answers /metrics itself; its body is what the service says for a path it lacks.
    rule = template["Resources"]["MetricsNotRouted"]["Properties"]
    assert rule["Conditions"][0]["PathPatternConfig"]["Values"][0] == "/metrics"
    assert "/metrics" in {r.rule for r in app.url_map.iter_rules()}  # the path the service exports on
    refusal = rule["Actions"][0]["FixedResponseConfig"]
    unknown = app.test_client().get("/no-such-endpoint")
    assert int(refusal["StatusCode"]) == unknown.status_code == 404
    assert json.loads(refusal["MessageBody"]) == unknown.get_json()


def test_execution_role_reads_only_that_secret(template):
    (policy,) = template["Resources"]["ExecutionRole"]["Properties"]["Policies"]
    statements = policy["PolicyDocument"]["Statement"]
    secret_statements = [s for s in statements if "secretsmanager" in str(s.get("Action"))]
    assert secret_statements == [{"Sid": "ReadTheOneSecret", "Effect": "Allow",
                                  "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "SecretArn"}}]
    assert "Policies" not in template["Resources"]["TaskRole"]["Properties"]


# -- (b) the stack in moto's CloudFormation --------------------------------------------------------

MOTO_UNSUPPORTED = {"AWS::ElastiCache::SubnetGroup", "AWS::ElastiCache::ReplicationGroup",
                    "AWS::ApplicationAutoScaling::ScalableTarget",
                    "AWS::ApplicationAutoScaling::ScalingPolicy", "AWS::CloudWatch::Alarm",
                    "AWS::EC2::SecurityGroupEgress", "AWS::Logs::MetricFilter"}


def _for_moto(template: dict) -> dict:
    """The template with the two GetAtts moto lacks replaced by their documented ARN suffixes."""
    full_names = {
        # arn:...:loadbalancer/app/<name>/<id>  ->  app/<name>/<id>
        ("LoadBalancer", "LoadBalancerFullName"):
            {"Fn::Select": [1, {"Fn::Split": [":loadbalancer/", {"Ref": "LoadBalancer"}]}]},
        # arn:...:targetgroup/<name>/<id>  ->  targetgroup/<name>/<id>
        ("TargetGroup", "TargetGroupFullName"):
            {"Fn::Select": [5, {"Fn::Split": [":", {"Ref": "TargetGroup"}]}]},
    }

    def walk(node):
        if isinstance(node, dict):
            if list(node) == ["Fn::GetAtt"] and tuple(node["Fn::GetAtt"]) in full_names:
                return full_names[tuple(node["Fn::GetAtt"])]
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node
    return walk(template)


@pytest.fixture(scope="module")
def moto_stack(template):
    # Built once for the module (the tests below only read it): about 1 s instead of 1 s each.
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")
                   ["Subnet"]["SubnetId"] for i, zone in enumerate("abab")]
        cert = boto3.client("acm", region_name=REGION).request_certificate(
            DomainName="api.example.com")["CertificateArn"]
        secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="carbon-optimizer/prod", SecretString="{}")["ARN"]
        parameters = {"VpcId": vpc, "PublicSubnetIds": ",".join(subnets[:2]),
                      "PrivateSubnetIds": ",".join(subnets[2:]), "AlbSubnetCidrs": "10.0.0.0/24,10.0.1.0/24",
                      "CertificateArn": cert, "SecretArn": secret,
                      "ImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/carbon-optimizer:1.0.0",
                      # moto cannot create ElastiCache from CloudFormation: the existing-Redis branch.
                      "ExistingRedisUrl": "rediss://redis.example.internal:6379/0"}
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cloudformation.create_stack(
                StackName="carbon", TemplateBody=json.dumps(_for_moto(template)),
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
                Capabilities=["CAPABILITY_IAM"])
        skipped = {str(w.message).split()[3] for w in caught if "not supported by moto" in str(w.message)}
        yield {"cloudformation": cloudformation, "parameters": parameters, "skipped": skipped}


def test_stack_builds_in_moto(moto_stack, template):
    cloudformation = moto_stack["cloudformation"]
    (stack,) = cloudformation.describe_stacks(StackName="carbon")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    # Everything the template declares (on this branch) is created, except what moto cannot.
    created = {r.get("LogicalResourceId") for r in cloudformation.describe_stack_resources(StackName="carbon")
               ["StackResources"]} - {None}
    declared = {name for name, r in template["Resources"].items() if r.get("Condition") != "CreateRedis"}
    not_created = {template["Resources"][name]["Type"] for name in declared - created}
    assert not_created == moto_stack["skipped"] - {"AWS::ElastiCache::SubnetGroup",
                                                   "AWS::ElastiCache::ReplicationGroup"}
    assert moto_stack["skipped"] <= MOTO_UNSUPPORTED, "moto supports more now: check those resources too"


def test_service_url_output_is_the_load_balancer(moto_stack):
    (stack,) = moto_stack["cloudformation"].describe_stacks(StackName="carbon")["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    (balancer,) = boto3.client("elbv2", region_name=REGION).describe_load_balancers()["LoadBalancers"]
    assert outputs["ServiceUrl"] == f"https://{balancer['DNSName']}"
    assert outputs["LoadBalancerDnsName"] == balancer["DNSName"]
    assert "RedisUrl" not in outputs  # an existing Redis: nothing created to report


def test_moto_load_balancer_routes_https_to_health_checked_targets(moto_stack):
    elbv2 = boto3.client("elbv2", region_name=REGION)
    (balancer,) = elbv2.describe_load_balancers()["LoadBalancers"]
    listeners = {l["Port"]: l for l in elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])
                 ["Listeners"]}
    assert set(listeners) == {80, 443}
    assert listeners[443]["Protocol"] == "HTTPS"
    assert listeners[443]["Certificates"][0]["CertificateArn"] == moto_stack["parameters"]["CertificateArn"]
    assert listeners[80]["DefaultActions"][0]["Type"] == "redirect"
    assert listeners[80]["DefaultActions"][0]["RedirectConfig"]["Protocol"] == "HTTPS"
    (group,) = elbv2.describe_target_groups()["TargetGroups"]
    assert (group["HealthCheckPath"], group["Port"], group["TargetType"]) == ("/health", 5000, "ip")
    assert listeners[443]["DefaultActions"][0]["TargetGroupArn"] == group["TargetGroupArn"]
    (rule,) = [r for r in elbv2.describe_rules(ListenerArn=listeners[443]["ListenerArn"])["Rules"]
               if not r["IsDefault"]]
    assert rule["Actions"][0]["FixedResponseConfig"]["StatusCode"] == "404"  # /metrics not routed


def test_moto_task_definition_and_service(moto_stack):
    ecs = boto3.client("ecs", region_name=REGION)
    (cluster,) = ecs.list_clusters()["clusterArns"]
    (service_arn,) = ecs.list_services(cluster=cluster)["serviceArns"]
    (service,) = ecs.describe_services(cluster=cluster, services=[service_arn])["services"]
    # moto's CloudFormation drops the service's LaunchType and LoadBalancers (test (a) checks them
    # in the template); it keeps the task definition and the count.
    assert service["desiredCount"] == 2  # MinTasks' default
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    (container,) = task["containerDefinitions"]
    secret = moto_stack["parameters"]["SecretArn"]
    assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == {
        name: f"{secret}:{name.lower()}::" for name in env_backend_names()}
    environment = {e["name"]: e["value"] for e in container["environment"]}
    assert environment["REDIS_URL"] == moto_stack["parameters"]["ExistingRedisUrl"]
    assert environment["TRUSTED_PROXY_CIDRS"] == moto_stack["parameters"]["AlbSubnetCidrs"]
    assert task["volumes"] == [{"name": "tmp"}]
    assert container["mountPoints"] == [{"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}]


def test_moto_dashboard_names_the_real_load_balancer(moto_stack):
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    body = json.loads(cloudwatch.get_dashboard(DashboardName="carbon")["DashboardBody"])
    (balancer,) = boto3.client("elbv2", region_name=REGION).describe_load_balancers()["LoadBalancers"]
    full_name = balancer["LoadBalancerArn"].split(":loadbalancer/", 1)[1]
    metrics = [m for w in body["widgets"] if w["type"] == "metric" for m in w["properties"]["metrics"]]
    assert any(full_name in m for m in metrics)
    assert any("MemoryUtilization" in m for m in metrics) and any("CPUUtilization" in m for m in metrics)
    text = " ".join(w["properties"]["markdown"] for w in body["widgets"] if w["type"] == "text")
    assert "carbon_grams_co2eq_avoided_total" in text and "Prometheus" in text


def test_moto_execution_role_grants_that_secret(moto_stack):
    iam = boto3.client("iam", region_name=REGION)
    documents = []
    for role in iam.list_roles()["Roles"]:
        for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
            documents.append(iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"])
    (document,) = documents  # the task role has none
    # moto keeps an inline policy as the text of a Python dict, so look at it as text.
    text = str(document)
    assert f"'Action': 'secretsmanager:GetSecretValue', 'Resource': '{moto_stack['parameters']['SecretArn']}'" in text
    assert text.count("'secretsmanager:") == 1  # one action of that service
    assert "kms:Decrypt" not in text  # no KMS key given: the conditional statement is left out


# -- DEPLOYMENT.md's AWS section against the template ----------------------------------------------

def _section(heading: str) -> str:
    text = (ROOT / "DEPLOYMENT.md").read_text()
    start = text.index(heading + "\n") + len(heading)
    following = [text.find(mark, start) for mark in ("\n## ", "\n### ")]
    return text[start:min(i for i in following if i >= 0)]


def test_documented_alarms_are_the_template_alarms(template):
    documented = set(re.findall(r"^\| `(\w+)` \|", _section("### Alarms"), re.M))
    alarms = {name for name, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert documented == alarms


def test_documented_secret_works_with_the_template(container):
    (example,) = re.findall(r"```json\n(.*?)```", _section("### The secret for the template"), re.S)
    secret = json.loads(example)
    assert set(secret) == secret_json_keys()
    injected = {name: secret[key] for name, key in _secret_entries(container).items()}
    assert len(EnvSecretStore(injected).current().api_keys) == 2


def test_documented_deploy_commands_name_template_parameters(template):
    commands = re.findall(r"```bash\n(.*?)```", _section("### Deploy") + _section("### Roll back"), re.S)
    named = set(re.findall(r"(?:^|\s)([A-Z][A-Za-z0-9]+)=", " ".join(commands)))
    assert named and named <= set(template["Parameters"]), named - set(template["Parameters"])
    required = {name for name, p in template["Parameters"].items() if "Default" not in p}
    assert required <= named, f"the deploy command leaves out {required - named}"
