"""moto runs in server mode as a real HTTP endpoint on loopback that boto3 talks to:
the AWS provider's tests will build Auto Scaling groups against it."""

from __future__ import annotations

import boto3


def test_boto3_creates_and_scales_an_auto_scaling_group_through_moto_server(
    moto_endpoint: str,
) -> None:
    assert moto_endpoint.startswith("http://127.0.0.1:")
    ec2 = boto3.client("ec2", region_name="eu-west-1", endpoint_url=moto_endpoint)
    autoscaling = boto3.client("autoscaling", region_name="eu-west-1", endpoint_url=moto_endpoint)
    subnet = ec2.describe_subnets()["Subnets"][0]
    template = ec2.create_launch_template(
        LaunchTemplateName="workers-7f3c9a",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "m5.large"},
    )["LaunchTemplate"]

    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="workers-zone-a-on-demand-7f3c9a",
        LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"], "Version": "1"},
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=2,
        VPCZoneIdentifier=subnet["SubnetId"],
        Tags=[{"Key": "molt.dev/instance-group", "Value": "workers", "PropagateAtLaunch": True}],
    )
    autoscaling.set_desired_capacity(
        AutoScalingGroupName="workers-zone-a-on-demand-7f3c9a", DesiredCapacity=3
    )

    group = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=["workers-zone-a-on-demand-7f3c9a"]
    )["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 3
    assert len(group["Instances"]) == 3
    instance_ids = [i["InstanceId"] for i in group["Instances"]]
    reservations = ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
    launched = [i for r in reservations for i in r["Instances"]]
    assert all("LaunchTime" in i for i in launched)
    tags = {t["Key"]: t["Value"] for t in launched[0].get("Tags", [])}
    assert tags.get("molt.dev/instance-group") == "workers"
